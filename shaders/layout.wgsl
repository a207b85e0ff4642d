// Data movement: batched transpose, general permute, strided row copies
// (cat, narrow), nearest upsampling, embedding gather.
// CPU twin: src/cpu/layout.rs. Values are moved as T without arithmetic, so
// results equal the input bits in both dtypes.
//
// Bindings: x (values), ids (u32 indices; entry points that need none bind x
// again), o (output). Each entry point has its own params block at binding 0.
// Every `*_off` is the element offset of a binding window (GpuContext::bind).

@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> o: array<T>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// ----- transpose: [B, R, C] -> [B, C, R] through a padded tile ----------

struct TransposeParams {
    x_off: u32,
    o_off: u32,
    rows: u32,     // R
    cols: u32,     // C
    nr: u32,       // this dispatch moves nr x nc blocks of `batches` matrices
    nc: u32,
    tiles_r: u32,  // tiles over nr and nc; workgroups = batches * tiles_r * tiles_c
    tiles_c: u32,
    batches: u32,
}

@group(0) @binding(0) var<uniform> pt: TransposeParams;

// TILE + 1 columns so the column reads of the second phase hit distinct banks.
var<workgroup> tile: array<array<T, TILE + 1u>, TILE>;

// The x window starts at the block's corner (r0, c0) in its first matrix,
// the o window at (c0, r0): whole matrices, or one block of a matrix too big
// for a binding (src/gpu/ops/layout.rs plans the blocks).
@compute @workgroup_size(TILE, TILE_ROWS)
fn transpose(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) l: vec3<u32>) {
    let w = linear_id(wg, nwg);
    if (w >= pt.batches * pt.tiles_r * pt.tiles_c) {
        return;
    }
    let tc = w % pt.tiles_c;
    let tr = (w / pt.tiles_c) % pt.tiles_r;
    let b = w / (pt.tiles_c * pt.tiles_r);
    let xb = pt.x_off + b * pt.rows * pt.cols;
    let ob = pt.o_off + b * pt.rows * pt.cols;
    // Read a TILE x TILE block, consecutive threads along a row of x.
    for (var j = 0u; j < TILE; j += TILE_ROWS) {
        let r = tr * TILE + l.y + j;
        let c = tc * TILE + l.x;
        if (r < pt.nr && c < pt.nc) {
            tile[l.y + j][l.x] = x[xb + r * pt.cols + c];
        }
    }
    workgroupBarrier();
    // Write it transposed, consecutive threads along a row of o.
    for (var j = 0u; j < TILE; j += TILE_ROWS) {
        let c = tc * TILE + l.y + j;
        let r = tr * TILE + l.x;
        if (r < pt.nr && c < pt.nc) {
            o[ob + c * pt.rows + r] = tile[l.x][l.y + j];
        }
    }
}

// ----- gather: any permutation of rank <= 6 ------------------------------

struct GatherParams {
    n: u32,        // outputs in this dispatch
    x_off: u32,
    o_off: u32,
    start: u32,    // global output index of the dispatch's first output
    x_start: u32,  // global input index where the x window starts
    rank: u32,
    _pad0: u32,
    _pad1: u32,
    shape: array<vec4<u32>, 2>,   // output dims, outermost first
    stride: array<vec4<u32>, 2>,  // input stride of each output dim
}

@group(0) @binding(0) var<uniform> pg: GatherParams;

fn at(a: array<vec4<u32>, 2>, d: u32) -> u32 {
    return a[d / 4u][d % 4u];
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= pg.n) {
        return;
    }
    var rem = pg.start + i;
    var src = 0u;
    for (var d = i32(pg.rank) - 1; d >= 0; d--) {
        let s = at(pg.shape, u32(d));
        src += (rem % s) * at(pg.stride, u32(d));
        rem /= s;
    }
    o[pg.o_off + i] = x[pg.x_off + src - pg.x_start];
}

// ----- copy: rows of a strided 2-D block (cat, narrow) --------------------

struct CopyParams {
    n: u32,           // values in this dispatch (rows * row_len)
    x_off: u32,
    o_off: u32,
    row_len: u32,
    x_stride: u32,    // distance between rows in x
    o_stride: u32,    // and in o
}

@group(0) @binding(0) var<uniform> pc: CopyParams;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= pc.n) {
        return;
    }
    let r = i / pc.row_len;
    let j = i - r * pc.row_len;
    o[pc.o_off + r * pc.o_stride + j] = x[pc.x_off + r * pc.x_stride + j];
}

// ----- nearest upsampling of [planes, H, W] to [planes, OH, OW] -----------

struct UpsampleParams {
    n: u32,    // outputs in this dispatch (whole planes)
    x_off: u32,
    o_off: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    scale_h: f32,  // h / oh and w / ow, divided on the host (correctly rounded)
    scale_w: f32,
}

@group(0) @binding(0) var<uniform> pu: UpsampleParams;

// PyTorch's source index, as `nearest_src` in src/cpu/layout.rs (an f32
// product is correctly rounded in WGSL, so both sides agree exactly).
fn nearest(dst: u32, len_in: u32, len_out: u32, scale: f32) -> u32 {
    if (len_out == len_in) {
        return dst;
    }
    if (len_out == 2u * len_in) {
        return dst / 2u;
    }
    return min(u32(floor(f32(dst) * scale)), len_in - 1u);
}

@compute @workgroup_size(WG)
fn upsample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= pu.n) {
        return;
    }
    let area = pu.oh * pu.ow;
    let plane = i / area;
    let r = i - plane * area;
    let oy = r / pu.ow;
    let ox = r - oy * pu.ow;
    let src = plane * pu.h * pu.w + nearest(oy, pu.h, pu.oh, pu.scale_h) * pu.w
        + nearest(ox, pu.w, pu.ow, pu.scale_w);
    o[pu.o_off + i] = x[pu.x_off + src];
}

// ----- embedding: out[i, :] = table[ids[i], :] ----------------------------

struct EmbeddingParams {
    n: u32,     // outputs (ids * dim)
    x_off: u32,
    o_off: u32,
    i_off: u32,
    dim: u32,
    v0: u32,    // the x window holds table rows v0 .. v0+nv; other ids wait
    nv: u32,    // for the dispatch of their window
}

@group(0) @binding(0) var<uniform> pe: EmbeddingParams;

@compute @workgroup_size(WG)
fn embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= pe.n) {
        return;
    }
    let row = i / pe.dim;
    let id = ids[pe.i_off + row];
    if (id < pe.v0 || id - pe.v0 >= pe.nv) {
        return;
    }
    o[pe.o_off + i] = x[pe.x_off + (id - pe.v0) * pe.dim + i - row * pe.dim];
}
