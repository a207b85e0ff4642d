// Attention family: fused flash-style attention (FLASH), the naive kernel kept
// for comparison (NAIVE: entry points naive_max, naive_out), and last-dim
// softmax (SOFTMAX). The Rust side (src/gpu/ops/attention/) defines exactly
// one of the three switches per pipeline, plus ATTENTION for the first two,
// so each variant only sees the constants it defines.
// CPU twin: src/cpu/attention.rs. Storage T, arithmetic f32.
//
// Layout: q [B, Lq, H*D], k/v [B, Lk, H*D], out like q; head h owns channels
// h*D..(h+1)*D of every row (W = H*D is the row stride). Every entry point
// binds (q, k, v, out, st); softmax binds x as q, k and v and ignores st.
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
    scale: f32,      // FLASH: scale * log2(e) (it uses exp2); NAIVE: scale
    causal: u32,     // 1: query i sees keys 0..=i only
    q0: u32,         // index of the window's first query (for the causal mask)
    groups: u32,     // FLASH: workgroups of work; NAIVE: rows; SOFTMAX: rows
    q_off: u32,      // element offsets of the windows inside the bindings
    k_off: u32,
    v_off: u32,
    o_off: u32,
    q_bstride: u32,  // elements between batch items of q / out (Lq * W)
    k_bstride: u32,  // elements between batch items of k / v (Lk * W)
    qblocks: u32,    // FLASH: query blocks per (batch, head)
    n: u32,          // SOFTMAX: row length
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

#if ATTENTION
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
#endif

#if FLASH
// One workgroup per (batch, head, block of BQ queries). Per tile of BK keys:
//   1. S = Q K^T: Q and K are staged in workgroup memory in chunks of DC4
//      vec4 channels (Q stays resident when one chunk covers D); thread
//      (sy, sx) keeps scores of rows sy + 8i, keys sx + 8c (c < 4) in registers.
//   2. Online softmax in the log2 domain: the 8 threads of a row exchange
//      their partial maxima through `red`, each updates its copy of the
//      row's running max and writes P = exp2(S - max) to `pm` and the factor
//      exp2(old max - new max) that rescales the output to `rowf`.
//   3. O = alpha O + P V and the row sums l = alpha l + sum P: V is staged in
//      slabs of BKV keys; thread (oy, ox) keeps rows oy + TOY i, vec4 columns
//      ox + TOX j of O in registers.
// The score matrix never exists beyond one BQ x BK tile. Constants come from
// `FlashPlan` in src/gpu/ops/attention/plan.rs: D, DP4 (vec4 per head row),
// BQ, BK, DC4/NCH (chunk width and count), QS/KS (row strides of staged Q and
// K; KS is odd so the 8 key rows a quarter-warp reads hit distinct banks),
// TOX/CO (output threads and vec4 per thread along channels), BKV/VST (V slab
// keys and row stride), VOFF (where V slabs go), STAGE (vec4 of staging), WG.
const SR: u32 = BQ / 8u;      // score rows per thread (8 thread rows)
const TOY: u32 = WG / TOX;    // output thread rows
const RO: u32 = BQ / TOY;     // output rows per thread
const PS: u32 = BK + 1u;      // row stride of pm: odd, so column reads hit distinct banks
const NSLAB: u32 = BK / BKV;
const KOFF: u32 = BQ * QS;    // staged K rows start here

var<workgroup> stage: array<vec4<f32>, STAGE>;
var<workgroup> pm: array<f32, BQ * PS>;
var<workgroup> red: array<vec4<f32>, BQ * 2u>;  // per row: the 8 partial maxima
var<workgroup> rowf: array<f32, BQ>;            // per row: the rescale factor

// Stages rows [row0, row0 + nrows) of one head of input `which` (rows at or
// beyond `limit` read as 0), vec4 columns [c0, c0 + cw), into
// stage[dst + r * stride + c]. Consecutive threads read consecutive vec4 of a
// row: coalesced.
fn stage_rows(which: u32, base: u32, row0: u32, nrows: u32, limit: u32, c0: u32, cw: u32,
              dst: u32, stride: u32, tid: u32) {
    for (var e = tid; e < nrows * cw; e += WG) {
        let r = e / cw;
        let c = e % cw;
        let d = (c0 + c) * 4u;
        var x = vec4<f32>(0.0);
        if (row0 + r < limit && d < D) { x = fetch4(which, base + (row0 + r) * p.width + d, d); }
        stage[dst + r * stride + c] = x;
    }
}

@compute @workgroup_size(WG)
fn flash(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
    let g = wg.x + wg.y * nwg.x;
    if (g >= p.groups) { return; }
    let qb = g % p.qblocks;
    let bh = g / p.qblocks;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let qbase = p.q_off + b * p.q_bstride + h * D;
    let kbase = p.k_off + b * p.k_bstride + h * D;
    let vbase = p.v_off + b * p.k_bstride + h * D;
    let r0 = qb * BQ;  // first query row of the block, local to the window
    var nkeys = p.lk;
    if (p.causal != 0u) {
        // Keys past the block's last query are masked for every row: skip them.
        nkeys = min(p.lk, p.q0 + min(r0 + BQ, p.lq));
    }
    let kend = min(p.k_end, nkeys);
    // Nothing to add in this pass: the saved state stays as it is.
    if (p.last == 0u && p.k_begin >= kend) { return; }

    let sy = tid / 8u;   // score block: rows sy + 8i, keys sx + 8c
    let sx = tid % 8u;
    let oy = tid / TOX;  // output block: rows oy + TOY i, vec4 columns ox + TOX j
    let ox = tid % TOX;
    var m_run: array<f32, SR>;  // running max of rows sy + 8i (each of the 8 threads keeps a copy)
    var key_end: array<u32, SR>; // keys of rows sy + 8i that are unmasked: below this
    for (var i = 0u; i < SR; i++) {
        m_run[i] = NEG;
        key_end[i] = kend;
        if (p.causal != 0u) { key_end[i] = min(kend, p.q0 + r0 + sy + 8u * i + 1u); }
    }
    var acc: array<array<vec4<f32>, CO>, RO>;
    var l_run: array<f32, RO>;  // running sums of rows oy + TOY i
    if (p.first == 0u) {
        for (var i = 0u; i < SR; i++) {
            let r = r0 + sy + 8u * i;
            if (r < p.lq) { m_run[i] = st[p.ml_off + state_index(b, r, h)].x; }
        }
        for (var i = 0u; i < RO; i++) {
            let r = r0 + oy + TOY * i;
            if (r >= p.lq) { continue; }
            l_run[i] = st[p.ml_off + state_index(b, r, h)].y;
            for (var j = 0u; j < CO; j++) {
                if (ox + TOX * j < DP4) { acc[i][j] = st[state_index(b, r, h) * DP4 + ox + TOX * j]; }
            }
        }
    }

    for (var k0 = p.k_begin; k0 < kend; k0 += BK) {
        // 1. Scores of the tile.
        var s: array<vec4<f32>, SR>;
        for (var c = 0u; c < NCH; c++) {
            workgroupBarrier();  // staging memory is free again
            if (NCH > 1u || k0 == p.k_begin) {
                stage_rows(0u, qbase, r0, BQ, p.lq, c * DC4, DC4, 0u, QS, tid);
            }
            stage_rows(1u, kbase, k0, BK, p.lk, c * DC4, DC4, KOFF, KS, tid);
            workgroupBarrier();
            for (var d4 = 0u; d4 < DC4; d4++) {
                let kb = KOFF + sx * KS + d4;
                let k0v = stage[kb];
                let k1v = stage[kb + 8u * KS];
                let k2v = stage[kb + 16u * KS];
                let k3v = stage[kb + 24u * KS];
                for (var i = 0u; i < SR; i++) {
                    let qv = stage[(sy + 8u * i) * QS + d4];
                    s[i] += vec4<f32>(dot(qv, k0v), dot(qv, k1v), dot(qv, k2v), dot(qv, k3v));
                }
            }
        }

        // 2. Online softmax. Partial maxima over each thread's 4 keys first.
        let keys = vec4<u32>(k0 + sx) + vec4<u32>(0u, 8u, 16u, 24u);
        for (var i = 0u; i < SR; i++) {
            s[i] = select(vec4<f32>(NEG), s[i] * p.scale, keys < vec4<u32>(key_end[i]));
            let row = sy + 8u * i;
            red[row * 2u + sx / 4u][sx % 4u] = max(max(s[i].x, s[i].y), max(s[i].z, s[i].w));
        }
        workgroupBarrier();
        for (var i = 0u; i < SR; i++) {
            let row = sy + 8u * i;
            let m2 = max(red[row * 2u], red[row * 2u + 1u]);
            let m_new = max(m_run[i], max(max(m2.x, m2.y), max(m2.z, m2.w)));
            let e = select(vec4<f32>(0.0), exp2(s[i] - m_new), keys < vec4<u32>(key_end[i]));
            pm[row * PS + sx] = e.x;
            pm[row * PS + sx + 8u] = e.y;
            pm[row * PS + sx + 16u] = e.z;
            pm[row * PS + sx + 24u] = e.w;
            if (sx == 0u) { rowf[row] = exp2(m_run[i] - m_new); }
            m_run[i] = m_new;
        }
        // The staged K is no longer needed: the first V slab replaces it.
        stage_rows(2u, vbase, k0, BKV, p.lk, 0u, VST, VOFF, VST, tid);
        workgroupBarrier();

        // 3. Rescale, then accumulate P V and the row sums, a slab of V at a time.
        for (var i = 0u; i < RO; i++) {
            let alpha = rowf[oy + TOY * i];
            l_run[i] *= alpha;
            for (var j = 0u; j < CO; j++) { acc[i][j] *= alpha; }
        }
        for (var sl = 0u; sl < NSLAB; sl++) {
            if (sl > 0u) {
                workgroupBarrier();
                stage_rows(2u, vbase, k0 + sl * BKV, BKV, p.lk, 0u, VST, VOFF, VST, tid);
                workgroupBarrier();
            }
            for (var kk = 0u; kk < BKV; kk++) {
                var pr: array<f32, RO>;
                for (var i = 0u; i < RO; i++) {
                    pr[i] = pm[(oy + TOY * i) * PS + sl * BKV + kk];
                    l_run[i] += pr[i];
                }
                for (var j = 0u; j < CO; j++) {
                    let vv = stage[VOFF + kk * VST + ox + TOX * j];
                    for (var i = 0u; i < RO; i++) { acc[i][j] += pr[i] * vv; }
                }
            }
        }
    }

    let obase = p.o_off + b * p.q_bstride + h * D;
    for (var i = 0u; i < RO; i++) {
        let r = r0 + oy + TOY * i;
        if (r >= p.lq) { continue; }
        if (p.last == 0u) {
            for (var j = 0u; j < CO; j++) {
                if (ox + TOX * j < DP4) { st[state_index(b, r, h) * DP4 + ox + TOX * j] = acc[i][j]; }
            }
            if (ox == 0u) { st[p.ml_off + state_index(b, r, h)].y = l_run[i]; }
            continue;
        }
        let inv = 1.0 / l_run[i];
        for (var j = 0u; j < CO; j++) {
            let d = (ox + TOX * j) * 4u;
            if (d < D) { store4(obase + r * p.width + d, d, acc[i][j] * inv); }
        }
    }
    if (p.last == 0u && sx == 0u) {
        for (var i = 0u; i < SR; i++) {
            let r = r0 + sy + 8u * i;
            if (r < p.lq) { st[p.ml_off + state_index(b, r, h)].x = m_run[i]; }
        }
    }
}
#endif

#if NAIVE
// One thread per (batch, head, query) row, straight from global memory, in
// two entry points: `naive_max` finds the row max of the scores, then
// `naive_out` recomputes them, sums exp and accumulates the weighted V rows in
// a private array. Each may run as several passes over key ranges.

struct Row {
    q: u32,      // element index of the row's head in q / out
    k: u32,      // element index of key 0's head in k / v
    keys: u32,   // end of this pass's key range for the row (mask applied)
    st: u32,     // state index
}

fn row_of(id: u32) -> Row {
    let i = id % p.lq;
    let h = (id / p.lq) % p.heads;
    let b = id / (p.lq * p.heads);
    var keys = p.lk;
    if (p.causal != 0u) { keys = min(p.lk, p.q0 + i + 1u); }
    return Row(p.q_off + b * p.q_bstride + i * p.width + h * D,
               b * p.k_bstride + h * D,
               min(keys, p.k_end),
               state_index(b, i, h));
}

fn score(qe: u32, ke: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < D; d += 4u) { s += dot(fetch4(0u, qe + d, d), fetch4(1u, p.k_off + ke + d, d)); }
    return s * p.scale;
}

@compute @workgroup_size(WG)
fn naive_max(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * WG + lid;
    if (id >= p.groups) { return; }
    let r = row_of(id);
    var mx = -3.0e38;
    if (p.first == 0u) { mx = st[p.ml_off + r.st].x; }
    for (var j = p.k_begin; j < r.keys; j++) { mx = max(mx, score(r.q, r.k + j * p.width)); }
    st[p.ml_off + r.st] = vec4<f32>(mx, 0.0, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn naive_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * WG + lid;
    if (id >= p.groups) { return; }
    let r = row_of(id);
    let ml = st[p.ml_off + r.st];
    var sum = ml.y;
    var acc: array<vec4<f32>, DP4>;
    if (p.first == 0u) {
        for (var d4 = 0u; d4 < DP4; d4++) { acc[d4] = st[r.st * DP4 + d4]; }
    }
    for (var j = p.k_begin; j < r.keys; j++) {
        let e = exp(score(r.q, r.k + j * p.width) - ml.x);
        sum += e;
        for (var d4 = 0u; d4 < DP4; d4++) {
            acc[d4] += e * fetch4(2u, p.v_off + r.k + j * p.width + 4u * d4, 4u * d4);
        }
    }
    if (p.last == 0u) {
        for (var d4 = 0u; d4 < DP4; d4++) { st[r.st * DP4 + d4] = acc[d4]; }
        st[p.ml_off + r.st] = vec4<f32>(ml.x, sum, 0.0, 0.0);
        return;
    }
    for (var d4 = 0u; d4 < DP4; d4++) { store4(r.q - p.q_off + p.o_off + 4u * d4, 4u * d4, acc[d4] / sum); }
}
#endif

#if SOFTMAX
// One workgroup per row of length n: max, sum of exp, then the normalised
// values. Reductions use subgroup operations when the context has subgroups
// (SUBGROUPS), else a tree in workgroup memory.
var<workgroup> red: array<f32, WG>;

fn reduce(x: f32, is_max: bool, lid: u32, sg_lane: u32, sg_id: u32, sg_count: u32) -> f32 {
#if SUBGROUPS
    // Within each subgroup, then across the subgroups' partial results.
    var r = select(subgroupAdd(x), subgroupMax(x), is_max);
    if (sg_lane == 0u) { red[sg_id] = r; }
    workgroupBarrier();
    r = red[0];
    for (var i = 1u; i < sg_count; i++) { r = select(r + red[i], max(r, red[i]), is_max); }
    workgroupBarrier();  // `red` is reused by the next reduction
    return r;
#else
    red[lid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let a = red[lid];
            let b = red[lid + stride];
            red[lid] = select(a + b, max(a, b), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
#endif
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
#if SUBGROUPS
           @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32,
           @builtin(num_subgroups) sg_count: u32,
#endif
           ) {
#if SUBGROUPS
#else
    let sg_lane = 0u;
    let sg_id = 0u;
    let sg_count = 0u;
#endif
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.groups) { return; }
    let xbase = p.q_off + row * p.n;
    let obase = p.o_off + row * p.n;
    var m = -3.0e38;
    for (var i = lid; i < p.n; i += WG) { m = max(m, f32(q[xbase + i])); }
    m = reduce(m, true, lid, sg_lane, sg_id, sg_count);
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG) { s += exp(f32(q[xbase + i]) - m); }
    s = reduce(s, false, lid, sg_lane, sg_id, sg_count);
    let inv = 1.0 / s;
    for (var i = lid; i < p.n; i += WG) { o[obase + i] = T(exp(f32(q[xbase + i]) - m) * inv); }
}
#endif
