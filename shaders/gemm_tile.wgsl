// Register-tiled GEMM core shared by matmul.wgsl and conv2d.wgsl: the Rust side
// prepends this file to each (src/gpu/ops/tile.rs), so it is not a kernel on its own.
//
// A workgroup of 16 x 16 threads computes a TILE_M x TILE_N tile of C = A B;
// each side is 64, or 128 with the TALL (rows) / WIDE (columns) define.
// Thread (tx, ty) owns a block of 4-row groups x 4-column groups:
//   rows    ty*4 .. ty*4+3, and 64+ty*4 .. when TALL,
//   columns tx*4 .. tx*4+3, and 64+tx*4 .. when WIDE,
// accumulated in named vec4 registers (c0..c7 for the first column group,
// d0..d7 for the second), never in an indexed array, which could spill.
//
// K advances in slabs of BK. Both operand slabs are staged in workgroup
// memory k-major as vec4 rows, `sa[k][m/4]` and `sb[k][n/4]`, so one step of
// the inner loop reads 1-2 vec4 of A (one address per 16 threads of a row:
// broadcast) and 1-2 vec4 of B (16 consecutive vec4: conflict-free), then
// does 16-64 FMAs. The vec4 slot of a k-row is XOR-swizzled with swz(k): the
// transposing scalar stores of a k-contiguous operand (4 k of 8 rows per
// warp) then hit 32 distinct banks, with no padding, so 128 x 128 fits in
// BK * (TILE_M + TILE_N) * 4 = 16 KiB, the minimum every adapter offers.

const TILE_M: u32 = 64u * (1u + TALL);
const TILE_N: u32 = 64u * (1u + WIDE);
const BK: u32 = 16u;
const QM: u32 = TILE_M / 4u; // vec4 per k-row of sa
const QN: u32 = TILE_N / 4u;

var<workgroup> sa: array<vec4<f32>, BK * QM>;
var<workgroup> sb: array<vec4<f32>, BK * QN>;

var<private> c0: vec4<f32>;
var<private> c1: vec4<f32>;
var<private> c2: vec4<f32>;
var<private> c3: vec4<f32>;
#if TALL
var<private> c4: vec4<f32>;
var<private> c5: vec4<f32>;
var<private> c6: vec4<f32>;
var<private> c7: vec4<f32>;
#endif
#if WIDE
var<private> d0: vec4<f32>;
var<private> d1: vec4<f32>;
var<private> d2: vec4<f32>;
var<private> d3: vec4<f32>;
#if TALL
var<private> d4: vec4<f32>;
var<private> d5: vec4<f32>;
var<private> d6: vec4<f32>;
var<private> d7: vec4<f32>;
#endif
#endif

// Slot swizzle of k-row k (0, 2, 4, 6 for k / 4 = 0..3; a permutation of
// every aligned group of 8 slots).
fn swz(k: u32) -> u32 {
    return ((k >> 2u) & 3u) << 1u;
}

// One k-step: the outer products of the thread's A and B fragments at slab
// row k (s = swz(k)).
fn mma_step(k: u32, s: u32, tx: u32, ty: u32) {
    let b = sb[k * QN + (tx ^ s)];
#if WIDE
    let b2 = sb[k * QN + 16u + (tx ^ s)];
#endif
    let a = sa[k * QM + (ty ^ s)];
    c0 += a.x * b;
    c1 += a.y * b;
    c2 += a.z * b;
    c3 += a.w * b;
#if WIDE
    d0 += a.x * b2;
    d1 += a.y * b2;
    d2 += a.z * b2;
    d3 += a.w * b2;
#endif
#if TALL
    let a2 = sa[k * QM + 16u + (ty ^ s)];
    c4 += a2.x * b;
    c5 += a2.y * b;
    c6 += a2.z * b;
    c7 += a2.w * b;
#if WIDE
    d4 += a2.x * b2;
    d5 += a2.y * b2;
    d6 += a2.z * b2;
    d7 += a2.w * b2;
#endif
#endif
}

// Accumulates the staged slab into this thread's block: four k-steps per
// iteration, which share one swizzle, so their addresses are the same
// registers plus constants even where the driver does not unroll.
fn mma_slab(tx: u32, ty: u32) {
    for (var k = 0u; k < BK; k += 4u) {
        let s = swz(k);
        mma_step(k, s, tx, ty);
        mma_step(k + 1u, s, tx, ty);
        mma_step(k + 2u, s, tx, ty);
        mma_step(k + 3u, s, tx, ty);
    }
}

// Stages 4 consecutive k (kq*4 ..) of tile row `r` of a k-contiguous operand:
// the transposing store into the k-major slab.
fn put_a_k4(r: u32, kq: u32, v: vec4<f32>) {
    let k = kq * 4u;
    let i = k * QM + ((r / 4u) ^ swz(k));
    let c = r % 4u;
    sa[i][c] = v.x;
    sa[i + QM][c] = v.y;
    sa[i + 2u * QM][c] = v.z;
    sa[i + 3u * QM][c] = v.w;
}

fn put_b_k4(r: u32, kq: u32, v: vec4<f32>) {
    let k = kq * 4u;
    let i = k * QN + ((r / 4u) ^ swz(k));
    let c = r % 4u;
    sb[i][c] = v.x;
    sb[i + QN][c] = v.y;
    sb[i + 2u * QN][c] = v.z;
    sb[i + 3u * QN][c] = v.w;
}

// Stages 4 consecutive rows (slot q) at slab row k of a row-contiguous operand.
fn put_a_row4(k: u32, q: u32, v: vec4<f32>) {
    sa[k * QM + (q ^ swz(k))] = v;
}

fn put_b_row4(k: u32, q: u32, v: vec4<f32>) {
    sb[k * QN + (q ^ swz(k))] = v;
}

// Accumulator of row group r (0..3, 4..7 when TALL) and column group h (0, 1 when WIDE).
fn acc(h: u32, r: u32) -> vec4<f32> {
    switch h * 8u + r {
        case 0u: { return c0; }
        case 1u: { return c1; }
        case 2u: { return c2; }
        case 3u: { return c3; }
#if TALL
        case 4u: { return c4; }
        case 5u: { return c5; }
        case 6u: { return c6; }
        case 7u: { return c7; }
#endif
#if WIDE
        case 8u: { return d0; }
        case 9u: { return d1; }
        case 10u: { return d2; }
        case 11u: { return d3; }
#if TALL
        case 12u: { return d4; }
        case 13u: { return d5; }
        case 14u: { return d6; }
        case 15u: { return d7; }
#endif
#endif
        default: { return vec4<f32>(); }
    }
}

// Row groups and column groups per thread.
const ROW_GROUPS: u32 = 4u * (1u + TALL);
const COL_GROUPS: u32 = 1u + WIDE;

// Tile row of row group r, tile column of column group h, for thread (tx, ty).
fn acc_row(r: u32, ty: u32) -> u32 {
    return (r / 4u) * 64u + ty * 4u + r % 4u;
}

fn acc_col(h: u32, tx: u32) -> u32 {
    return h * 64u + tx * 4u;
}
