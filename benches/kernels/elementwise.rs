//! Element-wise kernels are bandwidth bound: report GB/s (bytes read +
//! written) at the SD shapes of `tests/ops/cases/elementwise.rs`.

use sd_wgpu::DType;

use crate::cases::elementwise::{ACT_64, ACT_8, GEGLU_64};
use crate::common::{report, Bench};

pub fn run(b: &Bench) {
    let acts = if b.short { &[ACT_64][..] } else { &[ACT_64, ACT_8] };
    for dt in [DType::F32, DType::F16] {
        for act in acts {
            let x = b.rand(act.x, dt);
            let s = b.time(b.iters(20), || x.silu());
            report(
                "silu",
                dt.name(),
                &format!("{:?}", act.x),
                s,
                act.unary_bytes(dt) / s / 1e9,
                "GB/s",
                None,
            );
        }
        let g = b.rand(GEGLU_64.x, dt);
        let s = b.time(b.iters(20), || g.geglu());
        report(
            "geglu",
            dt.name(),
            &format!("{:?}", GEGLU_64.x),
            s,
            GEGLU_64.geglu_bytes(dt) / s / 1e9,
            "GB/s",
            None,
        );
    }
}
