//! How an attention call is cut up: tile shapes of the flash kernel per head
//! dim, binding windows for inputs above the storage-binding limit, and key
//! passes on software adapters.

use super::super::windows;
use crate::gpu::{Define, GpuContext};
use crate::tensor::DType;

/// Threads per workgroup of the flash and naive kernels.
pub const WG: u32 = 64;
/// Keys per tile of the flash kernel: 8 thread columns x 4 keys each.
pub const BK: u32 = 32;
/// Workgroup memory the flash kernel may use: the WebGPU default limit, so
/// it runs on every adapter (llvmpipe has 32 KiB, most GPUs 48 KiB or more).
const SHARED_BYTES: u32 = 16 * 1024;
/// Loop iterations one invocation may run per pass on a software adapter.
/// llvmpipe (Mesa gallivm) counts every loop iteration of an invocation
/// against one limiter of 65535 and silently leaves all loops once it runs
/// out; this leaves room for the fixed per-invocation loops.
const SOFTWARE_LOOP_BUDGET: f64 = 40_000.0;

/// Tile shapes of the flash kernel for one head dim (see the comment above
/// `flash` in attention_flash.wgsl for what each constant means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashPlan {
    pub d: u32,
    pub dp4: u32,
    pub bq: u32,
    pub dc4: u32,
    pub nch: u32,
    pub ks: u32,
    pub tox: u32,
    pub co: u32,
    pub bkv: u32,
    pub vst: u32,
    pub voff: u32,
    pub stage: u32,
}

impl FlashPlan {
    pub fn new(d: u32) -> FlashPlan {
        let dp4 = d.div_ceil(4);
        // Output registers per thread are BQ * DP4 / WG vec4: keep them at
        // 16 vec4 or fewer (64 floats), the most that stays in registers
        // comfortably, by taking fewer queries per block as D grows.
        let bq = match dp4 {
            0..=32 => 32,
            33..=64 => 16,
            _ => 8,
        };
        let (tox, co) = output_split(bq, dp4);
        // V slab rows are DP4 vec4 long. When TOX * CO > DP4 a thread also reads
        // past a row's end; those columns only feed accumulators that are
        // never stored.
        let vst = dp4;
        let budget = staging_budget(bq);
        // Q and K chunks share `stage`, as wide as the budget allows. K rows
        // get an odd stride (a quarter-warp reads 8 key rows at once and must
        // hit distinct banks); Q reads are broadcasts and need no padding.
        let chunk = |dc4: u32| bq * dc4 + BK * (dc4 | 1);
        let max_dc4 = (1..=dp4)
            .rev()
            .find(|&c| chunk(c) <= budget)
            .expect("one vec4 fits");
        let nch = dp4.div_ceil(max_dc4);
        let dc4 = dp4.div_ceil(nch);
        let ks = dc4 | 1;
        // A thread's last V column may lie past the row end (TOX * CO > DP4):
        // the last slab row's padded columns must still lie inside `stage`.
        let pad = tox * co - dp4;
        let (voff, bkv) = if nch == 1 {
            // Q stays resident at the front; V tiles replace K behind it.
            let voff = bq * dc4;
            (
                voff,
                largest_pow2_divisor_fitting(BK, (budget - voff - pad) / vst),
            )
        } else {
            (0, largest_pow2_divisor_fitting(BK, (budget - pad) / vst))
        };
        let stage = chunk(dc4).max(voff + bkv * vst + pad);
        assert!(
            stage <= budget,
            "flash plan for D={d} does not fit workgroup memory"
        );
        FlashPlan {
            d,
            dp4,
            bq,
            dc4,
            nch,
            ks,
            tox,
            co,
            bkv,
            vst,
            voff,
            stage,
        }
    }

    pub fn defines(&self, vec4: bool) -> Vec<Define> {
        let def = |name, value| Define { name, value };
        vec![
            def("VEC4", vec4 as u32),
            def("WG", WG),
            def("D", self.d),
            def("DP4", self.dp4),
            def("BQ", self.bq),
            def("BK", BK),
            def("DC4", self.dc4),
            def("NCH", self.nch),
            def("QS", self.dc4),
            def("KS", self.ks),
            def("TOX", self.tox),
            def("CO", self.co),
            def("BKV", self.bkv),
            def("VST", self.vst),
            def("VOFF", self.voff),
            def("STAGE", self.stage),
        ]
    }

    /// Loop iterations per key of one invocation, counting every loop of the
    /// shader as written (llvmpipe unrolls some, so this overestimates).
    pub fn loop_iters_per_key(&self) -> f64 {
        let rows = |n: u32, cw: u32| (n * cw).div_ceil(WG);
        let (sr, ro) = (self.bq / 8, self.bq * self.tox / WG);
        let q_stage = if self.nch > 1 { rows(self.bq, self.dc4) } else { 0 };
        let chunk = 1 + q_stage + rows(BK, self.dc4) + self.dc4 * (1 + sr);
        let slabs = BK / self.bkv;
        let tile = 1
            + self.nch * chunk
            + 2 * sr
            + ro * (1 + self.co)
            + slabs * (1 + rows(self.bkv, self.vst))
            + BK * (1 + ro + self.co * (1 + ro));
        tile as f64 / BK as f64
    }
}

/// Vec4 of workgroup memory left for staging Q, K and V when `bq` queries
/// take the probability tile `pm`, the partial maxima `red` and `rowf`.
fn staging_budget(bq: u32) -> u32 {
    (SHARED_BYTES - bq * (BK + 1) * 4 - bq * 2 * 16 - bq * 4) / 16
}

/// How the BQ x DP4 output vec4 of a block are split over the WG threads:
/// TOX threads along channels with CO vec4 each, WG/TOX along rows with
/// BQ*TOX/WG rows each. Per key a thread makes RO + CO workgroup-memory loads
/// (RO probabilities, CO vec4 of V) for RO*CO*4 FMAs, padding included. The
/// cost counts a load as 4 FMAs (a GPU issues about 4 FMA instructions per
/// shared-memory access); ties go to the split with fewer loaded components
/// (RO + 4 CO), which is what a CPU adapter pays for.
fn output_split(bq: u32, dp4: u32) -> (u32, u32) {
    let mut best = ((u32::MAX, u32::MAX), 1, dp4);
    for tox in [1u32, 2, 4, 8, 16, 32, 64] {
        let toy = WG / tox;
        if toy > bq || !bq.is_multiple_of(toy) {
            continue;
        }
        let ro = bq / toy;
        let co = dp4.div_ceil(tox);
        let cost = (ro * co * 4 + 4 * (ro + co), ro + 4 * co);
        if cost < best.0 {
            best = (cost, tox, co);
        }
    }
    (best.1, best.2)
}

/// Largest power of two dividing `n` that is at most `cap` (at least 1).
fn largest_pow2_divisor_fitting(n: u32, cap: u32) -> u32 {
    let mut x = 1;
    while x * 2 <= cap && n.is_multiple_of(x * 2) {
        x *= 2;
    }
    x
}

/// One binding window of the attention inputs: batch items `b0..b0+nb`,
/// query rows `q0..q0+nq` of each.
#[derive(Debug, PartialEq, Eq)]
pub struct Window {
    pub b0: usize,
    pub nb: usize,
    pub q0: usize,
    pub nq: usize,
}

/// Splits the work so every binding fits: whole batch items while they fit,
/// else one batch item at a time in query windows. A query row costs W
/// elements of q and out and, in f32, W + 4H of pass state (DP4 vec4 and a
/// (max, sum) vec4 per head), so windows are sized by the state.
pub fn attention_windows(c: &GpuContext, dt: DType, shape: [usize; 5]) -> Vec<Window> {
    let [b, lq, lk, w, h] = shape;
    assert!(
        lk * w <= c.max_binding_elems(dt),
        "attention: the keys of one batch item ({lk} x {w}) exceed the storage-binding limit"
    );
    let max = c.max_binding_elems(DType::F32);
    let row = w.div_ceil(h).div_ceil(4) * 4 * h + 4 * h;
    let per_batch = (max / (lq.max(1) * row)).min(c.max_binding_elems(dt) / (lk * w).max(1));
    if per_batch >= 1 {
        return windows(b, per_batch, 1)
            .into_iter()
            .map(|(b0, nb)| Window {
                b0,
                nb,
                q0: 0,
                nq: lq,
            })
            .collect();
    }
    (0..b)
        .flat_map(|b0| {
            windows(lq, max / row, 1)
                .into_iter()
                .map(move |(q0, nq)| Window { b0, nb: 1, q0, nq })
        })
        .collect()
}

/// Key ranges `[k_begin, k_end)` of the passes over `lk` keys: one pass on a
/// hardware adapter; on a software one as many as keep an invocation under
/// the loop budget, each a multiple of `granule` keys long.
pub fn key_passes(c: &GpuContext, lk: usize, iters_per_key: f64, granule: usize) -> Vec<(usize, usize)> {
    if !c.caps().software {
        return vec![(0, lk)];
    }
    let keys = ((SOFTWARE_LOOP_BUDGET / iters_per_key) as usize / granule).max(1) * granule;
    windows(lk, keys, granule)
        .into_iter()
        .map(|(s, n)| (s, s + n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every head dim up to 512 gets a plan that fits workgroup memory, and
    /// the SD head dims get the intended shapes.
    #[test]
    fn plans_fit() {
        for d in 1..=512 {
            let p = FlashPlan::new(d);
            assert!(p.stage <= staging_budget(p.bq), "D={d}: {p:?}");
            let last_read = p.voff + (p.bkv - 1) * p.vst + p.tox * p.co;
            assert!(last_read <= p.stage, "D={d}: V reads past stage {p:?}");
            assert!(p.dc4 * p.nch >= p.dp4 && p.ks % 2 == 1, "D={d}: {p:?}");
            assert!(p.tox * p.co >= p.dp4 && BK.is_multiple_of(p.bkv), "D={d}: {p:?}");
            assert!(
                p.tox * (p.co - 1) < p.dp4,
                "D={d}: a whole padded vec4 column {p:?}"
            );
            assert!(p.co * (p.bq * p.tox / WG) <= 16, "D={d}: registers {p:?}");
        }
        // D=40 (UNet level 1): one chunk, so Q stays resident; whole V tiles.
        let p = FlashPlan::new(40);
        assert_eq!((p.bq, p.nch, p.bkv), (32, 1, 32));
        // D=80 (UNet level 2): two chunks, the whole V tile at once.
        let p = FlashPlan::new(80);
        assert_eq!((p.bq, p.nch, p.bkv), (32, 2, 32));
        // D=512 (VAE): 8 queries per block, several chunks and V slabs.
        let p = FlashPlan::new(512);
        assert_eq!(p.bq, 8);
        assert!(p.nch > 1 && p.bkv < BK);
    }
}
