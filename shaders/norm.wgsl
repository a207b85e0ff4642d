// Group norm (optionally fused with SiLU) and layer norm.
// CPU twin: src/cpu/norm.rs. Statistics in f32, storage T.
//
// Both ops normalise "groups": runs of `len` contiguous elements (a group
// norm group is C/G channels of one image, a layer norm row is one group with
// cpg = D and spatial = 1), then scale by gamma/beta of the element's channel
// `(group % groups) * cpg + i / spatial`.
//
// Statistics are robust to large means: each thread keeps (count, mean, M2)
// over batches of 4 values, merged with Chan's formula, all relative to a
// shift taken from the data (the first value of the chunk), and threads are
// combined by two sums in centred form (sum n*mean, then sum M2 + n*d^2),
// never by E[x^2] - E[x]^2.
//
// Small groups (`fused`): one workgroup per group computes the statistics
// and normalises. Big groups are cut into `parts` chunks of `chunk` values:
// `stats` writes (n, mean, M2) per chunk, then `apply` merges the partials
// of its group and normalises its chunk. Either way the dispatch covers the
// chunks k0 .. k0+nk of a binding window that starts at element `win_start`.

struct Params {
    x_off: u32,      // element offset of the window inside the x / o bindings
    o_off: u32,
    win_start: u32,  // global element index where the window starts
    k0: u32,         // first chunk of this dispatch (global index)
    nk: u32,         // chunks in this dispatch
    len: u32,        // values per group
    chunk: u32,      // values per chunk (the last chunk of a group may be shorter)
    parts: u32,      // chunks per group
    spatial: u32,    // values per channel
    cpg: u32,        // channels per group
    groups: u32,     // groups per image
    silu: u32,       // 1: apply SiLU after the affine
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> o: array<T>;
// Chunk partials (n, mean, M2, unused), written by `stats`, read by `apply`.
@group(0) @binding(5) var<storage, read_write> part: array<vec4<f32>>;

struct Ids {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if SUBGROUPS
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
#endif
}

var<private> ids: Ids;

// One slot per thread: enough for the tree and for any subgroup count. Each
// of the two sums of `block_stats` has its own row, so no barrier is needed
// after reading one before the other is written.
var<workgroup> red: array<array<vec2<f32>, WG>, 2>;

// Sum of `v` over the workgroup through row `k` of `red`, returned to every thread.
fn wg_sum(v: vec2<f32>, k: u32) -> vec2<f32> {
#if SUBGROUPS
    let s = subgroupAdd(v);
    if (ids.lane == 0u) {
        red[k][ids.sg] = s;
    }
    workgroupBarrier();
    var t = vec2<f32>(0.0);
    for (var i = 0u; i < ids.nsg; i++) {
        t += red[k][i];
    }
    return t;
#else
    red[k][ids.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (ids.lid < s) {
            red[k][ids.lid] += red[k][ids.lid + s];
        }
        workgroupBarrier();
    }
    return red[k][0];
#endif
}

struct Stat {
    n: f32,
    mean: f32,
    m2: f32,
}

// Chan et al.: statistics of the union of two disjoint sets.
fn merge(a: Stat, b: Stat) -> Stat {
    let n = a.n + b.n;
    if (b.n == 0.0) {
        return a;
    }
    let d = b.mean - a.mean;
    let r = b.n / n;
    return Stat(n, a.mean + d * r, a.m2 + b.m2 + d * d * a.n * r);
}

// This thread's share of x[base .. base+len), minus `shift`: elements
// base + lid + j*WG, four per step so loads overlap.
fn thread_stats(base: u32, len: u32, shift: f32) -> Stat {
    var s = Stat(0.0, 0.0, 0.0);
    for (var i = ids.lid; i < len; i += 4u * WG) {
        var v = vec4<f32>(0.0);
        var m = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let e = i + j * WG;
            if (e < len) {
                v[j] = f32(x[base + e]) - shift;
                m[j] = 1.0;
            }
        }
        // e = i is always in range, so nb >= 1.
        let nb = dot(m, vec4<f32>(1.0));
        let mb = dot(v, m) / nb;
        let dv = (v - mb) * m;
        s = merge(s, Stat(nb, mb, dot(dv, dv)));
    }
    return s;
}

// Workgroup-wide statistics from every thread's `s` (all in shifted units).
fn block_stats(s: Stat) -> Stat {
    let t = wg_sum(vec2<f32>(s.n * s.mean, s.n), 0u);
    let mean = t.x / max(t.y, 1.0);
    let d = s.mean - mean;
    let m2 = wg_sum(vec2<f32>(s.m2 + s.n * d * d, 0.0), 1u).x;
    return Stat(t.y, mean, m2);
}

// Normalises values off .. off+n of group g (x at xb, o at ob, both pointing
// at the group's value `off`).
fn normalise(xb: u32, ob: u32, g: u32, off: u32, n: u32, mean: f32, rstd: f32) {
    // Channel c and position r in it of value `off + i`, stepped by WG
    // without a division per value.
    let first = off + ids.lid;
    var c = (g % p.groups) * p.cpg + first / p.spatial;
    var r = first % p.spatial;
    let dc = WG / p.spatial;
    let dr = WG % p.spatial;
    for (var i = ids.lid; i < n; i += WG) {
        var y = (f32(x[xb + i]) - mean) * (rstd * f32(gamma[c])) + f32(beta[c]);
        if (p.silu != 0u) {
            y = y / (1.0 + exp(-y));
        }
        o[ob + i] = T(y);
        c += dc;
        r += dr;
        if (r >= p.spatial) {
            r -= p.spatial;
            c += 1u;
        }
    }
}

fn rstd_of(s: Stat) -> f32 {
    return inverseSqrt(s.m2 / max(s.n, 1.0) + p.eps);
}

fn chunk_id() -> u32 {
    return ids.wg.x + ids.wg.y * ids.nwg.x;
}

// Where chunk k starts inside the bound window.
fn chunk_base(k: u32) -> u32 {
    let g = k / p.parts;
    return g * p.len + (k % p.parts) * p.chunk - p.win_start;
}

fn chunk_len(k: u32) -> u32 {
    return min(p.chunk, p.len - (k % p.parts) * p.chunk);
}

// One workgroup per group (parts == 1, chunk == len).
@compute @workgroup_size(WG)
fn fused(i: Ids) {
    ids = i;
    let w = chunk_id();
    if (w >= p.nk) {
        return;
    }
    let g = p.k0 + w;
    let base = chunk_base(g);
    let shift = f32(x[p.x_off + base]);
    let s = block_stats(thread_stats(p.x_off + base, p.len, shift));
    normalise(p.x_off + base, p.o_off + base, g, 0u, p.len, shift + s.mean, rstd_of(s));
}

// Partial statistics of one chunk.
@compute @workgroup_size(WG)
fn stats(i: Ids) {
    ids = i;
    let w = chunk_id();
    if (w >= p.nk) {
        return;
    }
    let k = p.k0 + w;
    let base = p.x_off + chunk_base(k);
    let shift = f32(x[base]);
    let s = block_stats(thread_stats(base, chunk_len(k), shift));
    if (ids.lid == 0u) {
        part[k] = vec4<f32>(s.n, shift + s.mean, s.m2, 0.0);
    }
}

// Merges the partials of the chunk's group (parts <= WG), then normalises the chunk.
@compute @workgroup_size(WG)
fn apply(i: Ids) {
    ids = i;
    let w = chunk_id();
    if (w >= p.nk) {
        return;
    }
    let k = p.k0 + w;
    let g = k / p.parts;
    let first = g * p.parts;
    let shift = part[first].y;
    var s = Stat(0.0, 0.0, 0.0);
    if (ids.lid < p.parts) {
        let q = part[first + ids.lid];
        s = Stat(q.x, q.y - shift, q.z);
    }
    s = block_stats(s);
    let base = chunk_base(k);
    let off = (k % p.parts) * p.chunk;
    normalise(p.x_off + base, p.o_off + base, g, off, chunk_len(k), shift + s.mean, rstd_of(s));
}
