//! Reading one LoRA file: the format detected from its keys, each layer's
//! tensors matched to a weight of the model (see `keys`), shapes checked
//! against that weight, and the layer's scale (alpha / rank).
//!
//! Refused, with the file, the format detected and up to 5 keys: LyCORIS
//! LoHa / LoKr / full diffs / Tucker (`lora_mid`), DoRA, SDXL LoRAs, keys
//! that match no layer, and LoRAs that only partly match (how many did is
//! said): a LoRA half applied would change the image without saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hash::{short_hash, trained_hash};
use super::keys::{diffusers_key, kohya_key, ModuleIndex, Part, Role};
use super::metadata::AdapterConfigs;
use crate::checkpoint::bytes::{sniff, FileBytes, Format as Bytes};
use crate::checkpoint::{SafetensorsFile, TorchFile, TorchSource};
use crate::tensor::DType;
use crate::weights::TensorSource;
use crate::{Error, Result};

/// The key layouts read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `lora_unet_...lora_down.weight` (kohya sd-scripts, A1111, civitai).
    Kohya,
    /// `unet....lora_A.weight` (diffusers / PEFT, and diffusers' older names).
    Diffusers,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Format::Kohya => "kohya/A1111 LoRA",
            Format::Diffusers => "diffusers/PEFT LoRA",
        })
    }
}

/// One low-rank update `W += scale * up @ down`.
#[derive(Debug, Clone)]
pub struct Layer {
    pub part: Part,
    /// The model weight it changes (`down_blocks.0....to_q.weight`).
    pub weight: String,
    /// Tensor names in the file.
    pub down: String,
    pub up: String,
    pub rank: usize,
    /// alpha / rank; 1 when the file gives no alpha.
    pub scale: f32,
}

/// A LoRA file, matched to a model.
pub struct LoraFile {
    pub path: PathBuf,
    pub format: Format,
    pub layers: Vec<Layer>,
    /// A1111's short hash (see `hash`).
    pub hash: String,
    pub(super) source: Arc<dyn TensorSource>,
}

/// The weights a LoRA may change, as the model is about to load them.
#[derive(Clone, Copy)]
pub struct Bases<'a> {
    pub unet: &'a dyn TensorSource,
    pub text_encoder: &'a dyn TensorSource,
}

impl Bases<'_> {
    fn of(&self, part: Part) -> &dyn TensorSource {
        match part {
            Part::Unet => self.unet,
            Part::TextEncoder => self.text_encoder,
        }
    }
}

/// The tensors a layer's keys name in the file, before they are checked.
#[derive(Default)]
struct Group {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

impl LoraFile {
    /// Opens `path` (safetensors, or a torch `.pt` / `.ckpt` through the
    /// non-executing pickle reader) and matches it to `bases`.
    pub fn open(path: &Path, bases: Bases) -> Result<LoraFile> {
        Self::from_bytes(path, FileBytes::map(path)?, bases)
    }

    /// [`LoraFile::open`] on bytes already read; `path` names them.
    pub fn from_bytes(path: &Path, bytes: FileBytes, bases: Bases) -> Result<LoraFile> {
        if sniff(&bytes) == Bytes::Safetensors {
            let computed = short_hash(&bytes, true);
            let st = SafetensorsFile::from_bytes(path.to_path_buf(), bytes)?;
            let meta = st.metadata().clone();
            let hash = trained_hash(&meta).unwrap_or(computed);
            Self::parse(path, Arc::new(st), &meta, hash, bases)
        } else {
            let hash = short_hash(&bytes, false);
            let file = TorchFile::from_bytes(path.to_path_buf(), bytes)?;
            let source = Arc::new(TorchSource::new(Arc::new(file))?);
            Self::parse(path, source, &BTreeMap::new(), hash, bases)
        }
    }

    fn parse(
        path: &Path,
        source: Arc<dyn TensorSource>,
        metadata: &BTreeMap<String, String>,
        hash: String,
        bases: Bases,
    ) -> Result<LoraFile> {
        let bad = |msg: String| Error::bad_file(path, msg);
        let names = source.names();
        if names.is_empty() {
            return Err(bad("holds no float tensors: not a LoRA file".into()));
        }
        if let Some(what) = unsupported_kind(&names, metadata) {
            return Err(bad(format!("{what}: not supported, sd-wgpu applies LoRA (lora_down/lora_up or lora_A/lora_B) files for SD 1.x")));
        }
        let format = if names.iter().any(|n| kohya_key(n).is_some()) {
            Format::Kohya
        } else if names.iter().any(|n| diffusers_key(n).is_some()) {
            Format::Diffusers
        } else {
            return Err(bad(format!(
                "no LoRA keys (kohya `lora_unet_...lora_down.weight` or diffusers `unet....lora_A.weight`); \
                 its keys: {}",
                first(&names)
            )));
        };
        let mut groups: BTreeMap<(Part, String), Group> = BTreeMap::new();
        let mut unrecognised = Vec::new();
        for name in &names {
            let parsed = match format {
                Format::Kohya => kohya_key(name).and_then(|(p, s, r)| Some((p, s.to_string(), r?))),
                Format::Diffusers => diffusers_key(name),
            };
            let Some((part, module, role)) = parsed else {
                unrecognised.push(name.clone());
                continue;
            };
            let g = groups.entry((part, module)).or_default();
            let slot = match role {
                Role::Down => &mut g.down,
                Role::Up => &mut g.up,
                Role::Alpha => &mut g.alpha,
            };
            *slot = Some(name.clone());
        }
        let indexes = [
            ModuleIndex::new(Part::Unet, bases.unet),
            ModuleIndex::new(Part::TextEncoder, bases.text_encoder),
        ];
        let configs = AdapterConfigs::parse(metadata).map_err(|m| bad(format!("metadata: {m}")))?;
        let mut layers = Vec::new();
        let mut unmatched = unrecognised;
        for ((part, module), g) in &groups {
            let index = &indexes[*part as usize];
            let found = match format {
                Format::Kohya => index.kohya(module),
                Format::Diffusers => index.dotted(module),
            };
            let Some(target) = found else {
                unmatched.extend([&g.down, &g.up, &g.alpha].into_iter().flatten().cloned());
                continue;
            };
            let (Some(down), Some(up)) = (&g.down, &g.up) else {
                let has = g.down.as_ref().or(g.up.as_ref()).or(g.alpha.as_ref());
                return Err(bad(format!(
                    "{format}: {} has no {} tensor to pair with it",
                    has.map_or("a layer", |s| s.as_str()),
                    if g.down.is_none() {
                        "down (lora_down / lora_A)"
                    } else {
                        "up (lora_up / lora_B)"
                    }
                )));
            };
            let weight = format!("{target}.weight");
            let base = bases
                .of(*part)
                .info(&weight)
                .expect("indexed modules have a weight")
                .shape;
            let rank = check_shapes(&*source, down, up, &base).map_err(|m| bad(format!("{format}: {m}")))?;
            let alpha = match &g.alpha {
                Some(a) => Some(read_scalar(&*source, a).map_err(&bad)?),
                None => None,
            };
            let scale = configs
                .scale(*part, &target, rank, alpha)
                .map_err(|m| bad(format!("{format}: {m}")))?;
            layers.push(Layer {
                part: *part,
                weight,
                down: down.clone(),
                up: up.clone(),
                rank,
                scale,
            });
        }
        if !unmatched.is_empty() {
            let what = if layers.is_empty() {
                "no layer matches this SD 1.x model".to_string()
            } else if layers.len() == groups.len() {
                format!(
                    "its {} layers match this SD 1.x model but other keys are not LoRA tensors",
                    layers.len()
                )
            } else {
                format!(
                    "only {} of {} layers match this SD 1.x model",
                    layers.len(),
                    groups.len()
                )
            };
            return Err(bad(format!(
                "{format}: {what}; {} keys match no layer: {}",
                unmatched.len(),
                first(&unmatched)
            )));
        }
        Ok(LoraFile {
            path: path.to_path_buf(),
            format,
            layers,
            hash,
            source,
        })
    }

    /// The layers changing `part`.
    pub fn layers_of(&self, part: Part) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(move |l| l.part == part)
    }
}

/// Up to 5 names, then how many there are.
fn first(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// Formats this is not, told apart by their keys (LyCORIS names, SDXL's two
/// text encoders, kohya's SDXL metadata).
fn unsupported_kind(names: &[String], metadata: &BTreeMap<String, String>) -> Option<String> {
    const KINDS: [(&str, &str); 8] = [
        ("hada_w1_a", "LyCORIS LoHa (hada_w1_a...)"),
        ("lokr_w1", "LyCORIS LoKr (lokr_w1...)"),
        ("lora_mid", "LyCORIS LoCon with Tucker decomposition (lora_mid)"),
        ("dora_scale", "DoRA (dora_scale)"),
        ("lora_magnitude_vector", "DoRA (lora_magnitude_vector)"),
        (
            "lora_te1_",
            "an SDXL LoRA (lora_te1_/lora_te2_ keys: two text encoders)",
        ),
        (
            "lora_te2_",
            "an SDXL LoRA (lora_te1_/lora_te2_ keys: two text encoders)",
        ),
        (
            "text_encoder_2.",
            "an SDXL LoRA (text_encoder_2 keys: two text encoders)",
        ),
    ];
    for (needle, what) in KINDS {
        if let Some(n) = names.iter().find(|n| n.contains(needle)) {
            return Some(format!("{what}, e.g. {n}"));
        }
    }
    if let Some(n) = names
        .iter()
        .find(|n| n.ends_with(".diff") || n.ends_with(".diff_b"))
    {
        return Some(format!("a full-weight difference (LyCORIS `diff`), e.g. {n}"));
    }
    let base = metadata
        .get("ss_base_model_version")
        .map(|s| s.to_ascii_lowercase());
    if let Some(b) = base.filter(|b| b.starts_with("sdxl")) {
        return Some(format!("an SDXL LoRA (metadata ss_base_model_version = {b})"));
    }
    None
}

/// Checks `down` / `up` against the base weight `[out, in, (kh, kw)]`; returns the rank.
/// down: `[r, in, kh, kw]`, or `[r, in]` for a 1x1 or linear weight; up: `[out, r]` or `[out, r, 1, 1]`.
fn check_shapes(source: &dyn TensorSource, down: &str, up: &str, base: &[usize]) -> Result<usize, String> {
    let shape = |n: &str| source.info(n).map(|i| i.shape).unwrap_or_default();
    let (d, u) = (shape(down), shape(up));
    let rank = d.first().copied().unwrap_or(0);
    let kernel_is_1x1 = base[2..].iter().all(|&k| k == 1);
    let down_ok = rank > 0
        && d.len() >= 2
        && d[1] == base[1]
        && (d[2..] == base[2..] || (d.len() == 2 && kernel_is_1x1));
    let up_ok = u.len() >= 2 && u[0] == base[0] && u[1] == rank && u[2..].iter().all(|&k| k == 1);
    if !(down_ok && up_ok) {
        let want_down: Vec<String> = std::iter::once("r".to_string())
            .chain(base[1..].iter().map(|v| v.to_string()))
            .collect();
        return Err(format!(
            "{down} {d:?} and {up} {u:?} do not fit the model's weight {base:?} \
             (expected down [{}] and up [{}, r]): a LoRA for another model?",
            want_down.join(", "),
            base[0]
        ));
    }
    Ok(rank)
}

/// A one-element tensor's value (kohya's `alpha`).
fn read_scalar(source: &dyn TensorSource, name: &str) -> Result<f32, String> {
    let info = source.info(name).ok_or_else(|| format!("no tensor {name}"))?;
    if info.shape.iter().product::<usize>() != 1 {
        return Err(format!(
            "{name} has shape {:?}, expected a single value",
            info.shape
        ));
    }
    let v = source.read(name, DType::F32).map_err(|e| e.to_string())?.to_f32()[0];
    if !v.is_finite() {
        return Err(format!("{name} is {v}, expected a finite alpha"));
    }
    Ok(v)
}
