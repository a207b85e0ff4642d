// Flash attention, the tuned kernel of the attention family; attention.wgsl
// (parameters, bindings, helpers) is prepended by src/gpu/ops/attention/.
//
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
