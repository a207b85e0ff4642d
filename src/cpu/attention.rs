//! CPU twin of the attention kernels (`shaders/attention_*.wgsl`): per
//! (batch, head, query) a full score row, max-subtracted softmax in f32, then P V.

use rayon::prelude::*;

use super::profile::{Family, Timer};
use crate::ops::AttentionOpts;
use crate::tensor::Tensor;

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Tensor {
    let (b, lq, width) = (q.dim(0), q.dim(1), q.dim(2));
    let lk = k.dim(1);
    let h = opts.heads;
    let d = width / h;
    let _t = Timer::new(Family::Attention, 4.0 * (b * h * lq * lk * d) as f64);
    let qv = q.cpu_data().to_f32();
    let kv = k.cpu_data().to_f32();
    let vv = v.cpu_data().to_f32();
    let mut out = vec![0.0f32; b * lq * width];
    // One task per (batch, query row); heads inside to share the row.
    out.par_chunks_mut(width).enumerate().for_each(|(row, o)| {
        let (bi, i) = (row / lq, row % lq);
        let mut s = vec![0.0f32; lk];
        for hh in 0..h {
            let qr = &qv[(bi * lq + i) * width + hh * d..][..d];
            let keys = if opts.causal { i + 1 } else { lk };
            let mut mx = f32::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate().take(keys) {
                let kr = &kv[(bi * lk + j) * width + hh * d..][..d];
                *sj = qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * opts.scale;
                mx = mx.max(*sj);
            }
            let mut sum = 0.0f32;
            for sj in s.iter_mut().take(keys) {
                *sj = (*sj - mx).exp();
                sum += *sj;
            }
            let oh = &mut o[hh * d..(hh + 1) * d];
            for (j, &p) in s.iter().enumerate().take(keys) {
                let vr = &vv[(bi * lk + j) * width + hh * d..][..d];
                for (ov, vx) in oh.iter_mut().zip(vr) {
                    *ov += p * vx;
                }
            }
            for ov in oh.iter_mut() {
                *ov /= sum;
            }
        }
    });
    Tensor::cpu_from_f32(out, q.shape(), q.dtype())
}
