// Naive attention, kept to compare the flash kernel with; attention.wgsl
// (parameters, bindings, helpers) is prepended by src/gpu/ops/attention/.
//
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
