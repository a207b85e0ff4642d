// Matrix multiplication C = alpha * op(A) op(B) + bias + residual, batched.
// CPU twin: src/cpu/matmul.rs. Storage T, arithmetic f32. The tuned kernel
// uses the register-tiled core of gemm_tile.wgsl (prepended to this file).
//
// Indices are relative to the bound windows (src/gpu/ops/matmul.rs):
//   A(m, k) = a[a_off + b * a_bs + m * lda + k]   (TRANS_A: k * lda + m)
//   B(k, n) = b[b_off + b * b_bs + k * ldb + n]   (TRANS_B: n * ldb + k; b_bs = 0 when shared)
//   C(m, n) = o[c_off + b * c_bs + m * ldc + n], residual alike at r_off, bias[bias_off + n].
// Defines: TRANS_A, TRANS_B select the loaders, so the inner loop has no
// branches; VEC4 (every offset, stride and contiguous extent a multiple of 4)
// switches loads and stores to vec4; TALL / WIDE pick 128-row / 128-column
// tiles; WG = 256.

struct Params {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_bs: u32,
    b_bs: u32,
    c_bs: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    r_off: u32,
    bias_off: u32,
    alpha: f32,
    has_bias: u32,
    has_res: u32,
    tiles_m: u32,
    tiles_n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if VEC4
@group(0) @binding(1) var<storage, read> a: array<T4>;
@group(0) @binding(2) var<storage, read> b: array<T4>;
@group(0) @binding(3) var<storage, read> bias: array<T4>;
@group(0) @binding(4) var<storage, read> res: array<T4>;
@group(0) @binding(5) var<storage, read_write> o: array<T4>;
#else
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> o: array<T>;
#endif

// ----- naive: one thread per output element ---------------------------------

#if VEC4
#else
@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.batch * p.m * p.n) { return; }
    let n = i % p.n;
    let m = (i / p.n) % p.m;
    let bi = i / (p.n * p.m);
    let a0 = p.a_off + bi * p.a_bs;
    let b0 = p.b_off + bi * p.b_bs;
    var sum = 0.0;
    for (var k = 0u; k < p.k; k++) {
#if TRANS_A
        let av = f32(a[a0 + k * p.lda + m]);
#else
        let av = f32(a[a0 + m * p.lda + k]);
#endif
#if TRANS_B
        let bv = f32(b[b0 + n * p.ldb + k]);
#else
        let bv = f32(b[b0 + k * p.ldb + n]);
#endif
        sum += av * bv;
    }
    var v = sum * p.alpha;
    if (p.has_bias != 0u) { v += f32(bias[p.bias_off + n]); }
    let ci = bi * p.c_bs + m * p.ldc + n;
    if (p.has_res != 0u) { v += f32(res[p.r_off + ci]); }
    o[p.c_off + ci] = T(v);
}
#endif

// ----- tuned: register-tiled ------------------------------------------------

// 4 consecutive elements of `a` from element index `i`; lane j is read only
// when `ok` and pos + j < lim (zero otherwise).
fn load_a4(i: u32, pos: u32, lim: u32, ok: bool) -> vec4<f32> {
#if VEC4
    if (ok && pos < lim) { return vec4<f32>(a[i / 4u]); }
    return vec4<f32>();
#else
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        if (ok && pos + j < lim) { v[j] = f32(a[i + j]); }
    }
    return v;
#endif
}

fn load_b4(i: u32, pos: u32, lim: u32, ok: bool) -> vec4<f32> {
#if VEC4
    if (ok && pos < lim) { return vec4<f32>(b[i / 4u]); }
    return vec4<f32>();
#else
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        if (ok && pos + j < lim) { v[j] = f32(b[i + j]); }
    }
    return v;
#endif
}

// Load l (0 .. TILE_M*BK/4) of the A slab at k0: 4 elements along the
// contiguous axis of the stored operand, so neighbouring threads read
// neighbouring memory.
fn fetch_a(base: u32, m0: u32, k0: u32, l: u32) -> vec4<f32> {
#if TRANS_A
    let k = k0 + l / QM;
    let m = m0 + (l % QM) * 4u;
    return load_a4(base + k * p.lda + m, m, p.m, k < p.k);
#else
    let m = m0 + l / 4u;
    let k = k0 + (l % 4u) * 4u;
    return load_a4(base + m * p.lda + k, k, p.k, m < p.m);
#endif
}

fn stage_a(l: u32, v: vec4<f32>) {
#if TRANS_A
    put_a_row4(l / QM, l % QM, v);
#else
    put_a_k4(l / 4u, l % 4u, v);
#endif
}

// Load l (0 .. TILE_N*BK/4) of the B slab at k0.
fn fetch_b(base: u32, n0: u32, k0: u32, l: u32) -> vec4<f32> {
#if TRANS_B
    let n = n0 + l / 4u;
    let k = k0 + (l % 4u) * 4u;
    return load_b4(base + n * p.ldb + k, k, p.k, n < p.n);
#else
    let k = k0 + l / QN;
    let n = n0 + (l % QN) * 4u;
    return load_b4(base + k * p.ldb + n, n, p.n, k < p.k);
#endif
}

fn stage_b(l: u32, v: vec4<f32>) {
#if TRANS_B
    put_b_k4(l / 4u, l % 4u, v);
#else
    put_b_row4(l / QN, l % QN, v);
#endif
}

// Writes alpha * acc + bias + residual for row m, columns n .. n+3.
fn emit(m: u32, n: u32, ci: u32, v_acc: vec4<f32>) {
    if (m >= p.m) { return; }
#if VEC4
    if (n >= p.n) { return; }
    var v = v_acc * p.alpha;
    if (p.has_bias != 0u) { v += vec4<f32>(bias[(p.bias_off + n) / 4u]); }
    if (p.has_res != 0u) { v += vec4<f32>(res[(p.r_off + ci) / 4u]); }
    o[(p.c_off + ci) / 4u] = T4(v);
#else
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            var v = v_acc[j] * p.alpha;
            if (p.has_bias != 0u) { v += f32(bias[p.bias_off + n + j]); }
            if (p.has_res != 0u) { v += f32(res[p.r_off + ci + j]); }
            o[p.c_off + ci + j] = T(v);
        }
    }
#endif
}

@compute @workgroup_size(WG)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
    // Tiles in N order first: neighbouring workgroups share their A rows.
    let id = wg.x + wg.y * nwg.x;
    if (id >= p.tiles_n * p.tiles_m * p.batch) { return; }
    let n0 = (id % p.tiles_n) * TILE_N;
    let m0 = ((id / p.tiles_n) % p.tiles_m) * TILE_M;
    let bi = id / (p.tiles_n * p.tiles_m);
    let tx = t % 16u;
    let ty = t / 16u;
    let a_base = p.a_off + bi * p.a_bs;
    let b_base = p.b_off + bi * p.b_bs;

    // The next slab is fetched into registers while the current one is used.
    var ra0 = fetch_a(a_base, m0, 0u, t);
    var rb0 = fetch_b(b_base, n0, 0u, t);
#if TALL
    var ra1 = fetch_a(a_base, m0, 0u, t + WG);
#endif
#if WIDE
    var rb1 = fetch_b(b_base, n0, 0u, t + WG);
#endif
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        workgroupBarrier();
        stage_a(t, ra0);
        stage_b(t, rb0);
#if TALL
        stage_a(t + WG, ra1);
#endif
#if WIDE
        stage_b(t + WG, rb1);
#endif
        workgroupBarrier();
        let k1 = k0 + BK;
        if (k1 < p.k) {
            ra0 = fetch_a(a_base, m0, k1, t);
            rb0 = fetch_b(b_base, n0, k1, t);
#if TALL
            ra1 = fetch_a(a_base, m0, k1, t + WG);
#endif
#if WIDE
            rb1 = fetch_b(b_base, n0, k1, t + WG);
#endif
        }
        mma_slab(tx, ty);
    }

    for (var h = 0u; h < COL_GROUPS; h++) {
        let n = n0 + acc_col(h, tx);
        for (var r = 0u; r < ROW_GROUPS; r++) {
            let m = m0 + acc_row(r, ty);
            emit(m, n, bi * p.c_bs + m * p.ldc + n, acc(h, r));
        }
    }
}
