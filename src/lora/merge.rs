//! Merging LoRAs at load time: [`Merged`] is the base network's weights with
//! every LoRA delta added, in f32, as each weight is read, then cast to the
//! storage type the model asks for. The model loads from it as from any
//! source, so generation runs the merged weights at full speed; the base
//! source is left untouched, so another LoRA set is exact (re-read, not
//! subtracted).
//!
//! `W += weight * scale * (up @ down)`: up `[out, r]`, down `[r, k]`,
//! W `[out, k]` with k = in * kh * kw (a LoCon 3x3 down `[r, in, 3, 3]` is
//! `[r, in * 9]`; its up is a 1x1 `[out, r, 1, 1]`). As PEFT's `merge`
//! (what diffusers' `fuse_lora` runs): the product first, then the scale.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::file::LoraFile;
use super::keys::Part;
use crate::tensor::{CpuData, DType};
use crate::weights::{TensorInfo, TensorSource};
use crate::Result;

/// A LoRA file with the multipliers it is applied with.
#[derive(Clone)]
pub struct Applied {
    pub file: Arc<LoraFile>,
    pub unet_weight: f32,
    pub text_encoder_weight: f32,
}

impl Applied {
    fn weight(&self, part: Part) -> f32 {
        match part {
            Part::Unet => self.unet_weight,
            Part::TextEncoder => self.text_encoder_weight,
        }
    }
}

/// One layer of one file, with `weight * scale`.
struct Delta {
    file: Arc<LoraFile>,
    layer: usize,
    factor: f32,
}

/// `base` with the deltas of `loras` for `part` added on read.
pub struct Merged {
    base: Arc<dyn TensorSource>,
    deltas: HashMap<String, Vec<Delta>>,
    what: String,
}

/// `base` itself when no LoRA changes `part` (or all weights are 0), else a [`Merged`] view.
pub fn merged(base: Arc<dyn TensorSource>, part: Part, loras: &[Applied]) -> Arc<dyn TensorSource> {
    let mut deltas: HashMap<String, Vec<Delta>> = HashMap::new();
    for a in loras {
        let w = a.weight(part);
        if w == 0.0 {
            continue;
        }
        for (i, layer) in a.file.layers.iter().enumerate().filter(|(_, l)| l.part == part) {
            deltas.entry(layer.weight.clone()).or_default().push(Delta {
                file: a.file.clone(),
                layer: i,
                factor: w * layer.scale,
            });
        }
    }
    if deltas.is_empty() {
        return base;
    }
    let names: Vec<String> = loras.iter().map(|a| a.file.path.display().to_string()).collect();
    let what = format!("{} with LoRA {}", base.describe(), names.join(", "));
    Arc::new(Merged { base, deltas, what })
}

impl TensorSource for Merged {
    fn names(&self) -> Vec<String> {
        self.base.names()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.base.info(name)
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let Some(deltas) = self.deltas.get(name) else {
            return self.base.read(name, want);
        };
        let mut w = self.base.read(name, DType::F32)?.to_f32().into_owned(); // [out, k]
        for d in deltas {
            let layer = &d.file.layers[d.layer];
            let up = d.file.source.read(&layer.up, DType::F32)?.to_f32().into_owned(); // [out, r]
            let down = d.file.source.read(&layer.down, DType::F32)?.to_f32().into_owned(); // [r, k]
            add_product(&mut w, &up, &down, layer.rank, d.factor);
        }
        Ok(CpuData::from_f32(w, want))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// `w += factor * up @ down`; w `[out, k]`, up `[out, r]`, down `[r, k]`.
/// Shapes were checked when the file was matched to the model.
pub fn add_product(w: &mut [f32], up: &[f32], down: &[f32], r: usize, factor: f32) {
    let k = down.len() / r;
    w.par_chunks_mut(k)
        .zip(up.par_chunks(r))
        .for_each(|(row, up_row)| {
            let mut acc = vec![0.0f32; k]; // one row of up @ down
            for (i, &u) in up_row.iter().enumerate() {
                for (a, &v) in acc.iter_mut().zip(&down[i * k..(i + 1) * k]) {
                    *a += u * v;
                }
            }
            for (x, a) in row.iter_mut().zip(acc) {
                *x += factor * a;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_then_scale() {
        // w [2, 3], up [2, 1], down [1, 3]
        let mut w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_product(&mut w, &[1.0, -2.0], &[0.5, 1.0, 2.0], 1, 2.0);
        assert_eq!(w, vec![2.0, 4.0, 7.0, 2.0, 1.0, -2.0]);
        // rank 2: up [1, 2] @ down [2, 2]
        let mut w = vec![0.0, 0.0];
        add_product(&mut w, &[1.0, 3.0], &[1.0, 2.0, 10.0, 20.0], 2, 0.5);
        assert_eq!(w, vec![15.5, 31.0]);
    }
}
